"""Builds docs/tour.md, the course notes lesson by lesson, from the scripts in examples/tour/.

    .venv/bin/python scripts/make_tour.py          # regenerate docs/tour.md and docs/img/tour/*.svg

Each lesson is one file, examples/tour/NN_name.py, whose docstring holds the lesson:
its first line is the title, the paragraph starting "Look at:" is the sentence on what to
look at, each "Tour: gradtrace ..." line is a command the tour runs and shows with its
real output, "Picture: [FOLDER] [OPTIONS]" names what `gradtrace dot` draws (the lesson's
trace folder by default) and "Snippet: FILE:FIRST-LAST" takes the snippet from another
file (by default it is the lesson's own code after the docstring). The commands run for
real, in order, from the repository root; tests/test_tour.py reruns them and checks that
the outputs in the tour still match.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "examples" / "tour"
TOUR = ROOT / "docs" / "tour.md"
IMAGES = ROOT / "docs" / "img" / "tour"
REGENERATE = ".venv/bin/python scripts/make_tour.py"


@dataclass
class Lesson:
    """One lesson of the tour, read from a script in examples/tour/."""

    name: str
    title: str
    look_at: str
    commands: list[str]
    snippet: str
    picture: list[str] = field(default_factory=list)

    @property
    def trace_folder(self) -> str:
        """The folder the lesson's first command writes (its `-o`)."""
        argv = shlex.split(self.commands[0])
        return argv[argv.index("-o") + 1]


def read_lesson(path: Path) -> Lesson:
    """Returns the Lesson that the script at `path` describes in its docstring."""
    source = path.read_text()
    module = ast.parse(source)
    doc = ast.get_docstring(module) or ""
    paragraphs = [p.strip() for p in doc.split("\n\n")]
    look_at = next(p for p in paragraphs if p.startswith("Look at:"))
    fields: dict[str, list[str]] = {}
    for line in doc.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Tour", "Picture", "Snippet"):
            fields.setdefault(key, []).append(value.strip())
    if "Snippet" in fields:
        file, _, span = fields["Snippet"][0].rpartition(":")
        first, last = (int(n) for n in span.split("-"))
        snippet = "\n".join((ROOT / file).read_text().splitlines()[first - 1:last])
    else:
        body_start = module.body[0].end_lineno if module.body else 0
        snippet = "\n".join(source.splitlines()[body_start:]).strip("\n")
    picture = shlex.split(fields["Picture"][0]) if "Picture" in fields else []
    return Lesson(name=path.stem, title=paragraphs[0].splitlines()[0].strip().rstrip("."),
                  look_at=" ".join(look_at.removeprefix("Look at:").split()),
                  commands=fields.get("Tour", []), snippet=snippet, picture=picture)


def read_lessons() -> list[Lesson]:
    """Returns every lesson in examples/tour/, in file-name order."""
    return [read_lesson(p) for p in sorted(LESSONS.glob("[0-9]*.py"))]


def command_env() -> dict[str, str]:
    """Returns the environment the tour's commands run in: this one, unbuffered (so
    standard output and standard error interleave as on a terminal), without settings
    that would change how gradtrace formats its output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "PYTHONWARNINGS")}
    env.update(NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


# One Python process runs all the commands of a lesson, each through gradtrace's own
# entry point (the `gradtrace` console script calls gradtrace.cli:main), so torch is
# imported once per lesson rather than once per command: most of a command's time.
_MARK = "\x1e make_tour: next command \x1e"
_DRIVER = f"""
import shlex, sys
from gradtrace.cli import main
codes = []
for command in sys.argv[1:]:
    print({_MARK!r}, flush=True)
    try:
        main(args=shlex.split(command)[1:], prog_name="gradtrace")
        codes.append(0)
    except SystemExit as exit:
        codes.append(exit.code if isinstance(exit.code, int) else 1)
    sys.stdout.flush()
    sys.stderr.flush()
print({_MARK!r}, *codes, flush=True)
"""


def run_commands(commands: list[str], cwd: Path) -> list[str]:
    """Runs `gradtrace ...` command lines in order in `cwd` (one Python process, this
    interpreter) and returns what each printed, standard error included, as a terminal
    would show it."""
    for command in commands:
        if shlex.split(command)[0] != "gradtrace":
            raise ValueError(f"a tour command starts with 'gradtrace': {command!r}")
    done = subprocess.run([sys.executable, "-c", _DRIVER, *commands], cwd=cwd, env=command_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    *printed, codes = done.stdout.split(_MARK)
    if len(printed) != len(commands) + 1 or done.returncode != 0:
        raise RuntimeError(f"the tour's commands did not all run in {cwd}:\n{done.stdout}")
    # 0 and 1 (a finding, a divergence) are answers worth showing; 2 and up, a usage error
    # or a crash, would show a broken command.
    for command, code in zip(commands, codes.split()):
        if int(code) >= 2:
            raise RuntimeError(f"{command!r} exited {code} in {cwd}:\n{done.stdout}")
    return [text.removeprefix("\n").rstrip("\n") for text in printed[1:]]


# What truly varies between two runs of the same command, here or on another machine:
# the folder it ran in, how long things took (replay's "seconds" column), the Python
# patch release, and the last bits of a float32 difference between two targets (the
# kernels, and so the rounding, depend on the CPU).
_TARGETS_TABLE = re.compile(r"^\| target \| verdict \| status \| seconds \| folder \|\n(?:\|.*\n?)*", re.M)
_VARIES = [
    (_TARGETS_TABLE, lambda table: re.sub(r"^((?:\|[^|]*){3}\| )\d+(?:\.\d+)?(?= \|)", r"\1<seconds>",
                                           table.group(0), flags=re.M)),
    (re.compile(r"^(\| python_version \|).*$", re.M), r"\1 <python> |"),
    (re.compile(r"(largest absolute difference )[0-9.e+-]+"), r"\1<float32 rounding>"),
]


def relative_to(text: str, cwd: Path) -> str:
    """Returns `text` with the absolute path of `cwd`, where it was printed, made relative."""
    return text.replace(str(cwd.resolve()) + os.sep, "").replace(str(cwd.resolve()), ".")


def normalise(text: str) -> str:
    """Returns `text` with what varies from run to run (timings, the Python patch
    release, float32 rounding between targets) replaced by placeholders, so two runs
    of one command compare equal."""
    for pattern, placeholder in _VARIES:
        text = pattern.sub(placeholder, text)
    return text


def picture_command(lesson: Lesson) -> str:
    """Returns the `gradtrace dot` command that draws the lesson's picture into docs/img/tour/."""
    args = list(lesson.picture)
    folder = args.pop(0) if args and not args[0].startswith("-") else lesson.trace_folder
    out = (IMAGES / f"{lesson.name}.svg").relative_to(ROOT)
    return shlex.join(["gradtrace", "dot", folder, "--format", "svg", "-o", str(out), *args])


def draw(lessons: list[Lesson]) -> None:
    """Draws every lesson's picture (after its commands ran) with `gradtrace dot`."""
    commands = [picture_command(lesson) for lesson in lessons]
    for lesson, command, printed in zip(lessons, commands, run_commands(commands, ROOT)):
        if not (IMAGES / f"{lesson.name}.svg").exists():
            raise RuntimeError(f"{command} drew nothing:\n{printed}")


def fence(text: str) -> str:
    """Returns a code fence longer than any run of backticks in `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def console_block(pairs: list[tuple[str, str]]) -> str:
    """Returns a ```console block showing each command and its output."""
    body = "\n".join(f"$ {command}\n{output}" if output else f"$ {command}"
                     for command, output in pairs)
    f = fence(body)
    return f"{f}console\n{body}\n{f}"


def render(lessons: list[Lesson], outputs: dict[str, list[tuple[str, str]]]) -> str:
    """Returns the text of docs/tour.md for `lessons` and each lesson's (command, output) pairs."""
    import torch

    import gradtrace

    parts = [
        "# A tour of the course notes",
        "",
        "The course notes (a learner's notes on PyTorch basics, in Chinese) teach one thing at a",
        "time; each lesson below is that thing as a small program (its section of the notes in the",
        "title), the `gradtrace` commands that show it, their real output, a picture of the graph",
        "drawn by `gradtrace dot`, and what to look at.",
        "Run the commands yourself after the [quick start](../README.md#quick-start) (with",
        "`source .venv/bin/activate`), from the repository root.",
        "",
        f"*Generated from `examples/tour/` by `{REGENERATE}` with torch "
        f"{torch.__version__.split('+')[0]} and gradtrace {gradtrace.__version__}; do not edit "
        "by hand: edit the lesson's script and run that one command. `tests/test_tour.py` reruns "
        "every command and fails when an output here no longer matches.*",
        "",
    ]
    parts += [f"{i}. [{lesson.title}](#{slug(i, lesson.title)})" for i, lesson in enumerate(lessons, 1)]
    for i, lesson in enumerate(lessons, 1):
        parts += ["", f"## {i}. {lesson.title}", "", "```python", lesson.snippet, "```", "",
                  console_block(outputs[lesson.name]), "",
                  f"![{lesson.title}: gradtrace dot](img/tour/{lesson.name}.svg)", "",
                  f"**Look at:** {lesson.look_at}"]
    return "\n".join(parts) + "\n"


def slug(number: int, title: str) -> str:
    """Returns the anchor GitHub gives the heading `## {number}. {title}`."""
    text = f"{number}. {title}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def run_lesson(lesson: Lesson, cwd: Path) -> list[tuple[str, str]]:
    """Runs the lesson's commands in order in `cwd`; returns (command, output) pairs,
    each output with `cwd` made relative."""
    printed = run_commands(lesson.commands, cwd)
    return [(c, relative_to(text, cwd)) for c, text in zip(lesson.commands, printed)]


def run_lessons(lessons: list[Lesson], cwd: Path, workers: int = 2) -> dict[str, list[tuple[str, str]]]:
    """Runs every lesson in `cwd`, `workers` lessons at a time (each lesson's commands in
    order; the lessons write separate folders); returns {lesson name: (command, output) pairs}."""
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip([lesson.name for lesson in lessons],
                        pool.map(lambda lesson: run_lesson(lesson, cwd), lessons)))


def main() -> int:
    """Runs every lesson's commands, draws its picture, writes docs/tour.md; returns 0."""
    lessons = read_lessons()
    IMAGES.mkdir(parents=True, exist_ok=True)
    print(f"make_tour: running the {len(lessons)} lessons of examples/tour/", file=sys.stderr)
    outputs = run_lessons(lessons, ROOT)
    print("make_tour: drawing their pictures with gradtrace dot", file=sys.stderr)
    for old in IMAGES.glob("*.svg"):
        old.unlink()
    draw(lessons)
    TOUR.write_text(render(lessons, outputs))
    print(f"make_tour: wrote {TOUR.relative_to(ROOT)} and {len(lessons)} pictures in "
          f"{IMAGES.relative_to(ROOT)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
