"""docs/tour.md, the course notes lesson by lesson, never rots: it covers every lesson in
examples/tour/, its pictures exist, and every command in it still prints what it shows.

Regenerate the tour with `.venv/bin/python scripts/make_tour.py`."""

import difflib
import importlib.util
import re
import sys

import pytest
import torch
from helpers import TESTS

ROOT = TESTS.parent
TOUR = ROOT / "docs" / "tour.md"
REGENERATE = "regenerate it: .venv/bin/python scripts/make_tour.py"

_spec = importlib.util.spec_from_file_location("make_tour", ROOT / "scripts" / "make_tour.py")
make_tour = importlib.util.module_from_spec(_spec)
sys.modules["make_tour"] = make_tour  # its dataclasses look their module up there
_spec.loader.exec_module(make_tour)


def tour_sections(text):
    """Returns {lesson name: [(command, output), ...]} as docs/tour.md shows them; a
    lesson's name is that of its picture, img/tour/<name>.svg."""
    sections = {}
    for section in re.split(r"^## \d+\. ", text, flags=re.M)[1:]:
        name = re.search(r"\(img/tour/([\w-]+)\.svg\)", section).group(1)
        block = re.search(r"^(`{3,})console\n(.*?)\n\1$", section, flags=re.M | re.S).group(2)
        pairs = []
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            pairs.append((command, output.rstrip("\n")))
        sections[name] = pairs
    return sections


TOUR_TEXT = TOUR.read_text()
SECTIONS = tour_sections(TOUR_TEXT)
TOUR_TORCH = re.search(r"with torch (\S+) and gradtrace", TOUR_TEXT).group(1)


def test_the_tour_has_one_section_per_lesson_script_in_order():
    assert list(SECTIONS) == [lesson.name for lesson in make_tour.read_lessons()], REGENERATE


def test_the_tour_shows_each_lessons_commands_as_its_script_lists_them():
    shown = {name: [c for c, _ in pairs] for name, pairs in SECTIONS.items()}
    listed = {lesson.name: lesson.commands for lesson in make_tour.read_lessons()}
    assert shown == listed, REGENERATE


def test_every_picture_the_tour_shows_exists():
    pictures = re.findall(r"!\[[^\]]*\]\((img/tour/[^)]+)\)", TOUR_TEXT)
    assert len(pictures) == len(SECTIONS)
    assert [p for p in pictures if not (TOUR.parent / p).is_file()] == []


def test_the_readme_links_the_tour():
    assert "](docs/tour.md)" in (ROOT / "README.md").read_text()


def test_normalise_hides_the_seconds_a_replay_target_took():
    table = ("| target | verdict | status | seconds | folder |\n| --- | --- | --- | --- | --- |\n"
             "| cpu | baseline | ok | {} | gradtrace-out/tour/13_data_parallel/cpu |")
    assert make_tour.normalise(table.format("9.66")) == make_tour.normalise(table.format("12.01"))


def test_normalise_keeps_the_figures_of_a_report():
    text = "tensors 5 (7 versions), storages 5\n| cpu | baseline | ok | 3 |"
    assert make_tour.normalise(text) == text


def test_relative_to_makes_the_working_folder_relative(tmp_path):
    printed = f"wrote {tmp_path}/gradtrace-out/x/trace.json"
    assert make_tour.relative_to(printed, tmp_path) == "wrote gradtrace-out/x/trace.json"


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    """Every lesson's commands run again, as the tour shows them, in a fresh folder that
    sees this checkout's examples/."""
    if torch.__version__.split("+")[0] != TOUR_TORCH:
        pytest.skip(f"the tour's outputs were made with torch {TOUR_TORCH}, this is {torch.__version__}")
    cwd = tmp_path_factory.mktemp("tour")
    (cwd / "examples").symlink_to(ROOT / "examples")
    return make_tour.run_lessons(make_tour.read_lessons(), cwd)


@pytest.mark.parametrize("lesson", list(SECTIONS))
def test_each_command_of_the_lesson_prints_what_the_tour_shows(rerun, lesson):
    for (command, shown), (_, printed) in zip(SECTIONS[lesson], rerun[lesson]):
        want, got = make_tour.normalise(shown), make_tour.normalise(printed)
        diff = "\n".join(difflib.unified_diff(want.splitlines(), got.splitlines(),
                                              "docs/tour.md", "printed now", lineterm=""))
        assert got == want, f"$ {command}\n{diff}\n{REGENERATE}"


def test_a_command_that_fails_never_enters_the_tour(tmp_path):
    with pytest.raises(RuntimeError, match="exited 2"):
        make_tour.run_commands(["gradtrace show no-such-folder"], tmp_path)
