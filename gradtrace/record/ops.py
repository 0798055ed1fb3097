"""What the recorder knows about torch callables before calling them: each
callable's qualified name and how it is handled, cached on first sight."""

from __future__ import annotations

import types

import torch
from torch.overrides import resolve_name as _resolve_name

from .hidden import hidden

__all__ = [
    "BACKWARD", "CONVERSIONS", "DATA_SET", "GRAD_MODE", "GRAD_READ", "OP", "PASS", "RANDOM",
    "SPECS", "Spec", "UNINITIALISED", "cached_spec", "lasting", "qualified_name", "spec_of",
    "unversioned_writes", "unversioned_written",
]

# Ops whose results hold whatever the memory held: a NaN there is no value the program
# made (the same list as gradtrace.graph.query's, which reads traces without torch).
UNINITIALISED = frozenset(("torch.empty", "torch.empty_like", "Tensor.new_empty", "torch.empty_strided"))

# torch wraps resolve_name in warnings.catch_warnings(), and every entry to that
# resets each module's record of warnings already shown: the user's warnings would
# print again. The function itself needs no such wrapper.
resolve_name = getattr(_resolve_name, "__wrapped__", _resolve_name)

# How the recorder treats a callable.
PASS = 0  # reads metadata, computes nothing: not an op
OP = 1
BACKWARD = 2  # a backward call (three APIs)
GRAD_MODE = 3  # torch._C._set_grad_enabled, behind no_grad / enable_grad / set_grad_enabled
GRAD_READ = 4  # Tensor.grad read: not an op, but a non-leaf read is worth knowing
DATA_SET = 5  # x.data = y: an op only when it rebinds x to other memory

_PASS_METHODS = {
    "dim", "size", "stride", "numel", "nelement", "ndimension", "storage_offset",
    "is_contiguous", "element_size", "data_ptr", "untyped_storage", "storage", "_typed_storage",
    "_is_view", "is_floating_point", "is_complex", "is_signed", "get_device", "__len__",
    "__format__", "__repr__", "__str__", "__hash__", "register_hook", "retain_grad",
    "register_post_accumulate_grad_hook", "is_inference", "is_pinned", "is_shared", "has_names",
    "_is_zerotensor", "__reduce_ex__", "__getstate__", "__setstate__", "is_set_to", "__dir__",
    "_fix_weakref", "__del__", "__sizeof__",
}
# torch functions that compute nothing (constructors of metadata, queries)
_PASS_FUNCTIONS = {"torch.device", "torch.is_tensor", "torch.is_storage", "torch.is_grad_enabled",
                   "torch.get_default_dtype", "torch.is_floating_point", "torch.is_complex"}
# Property reads that give a tensor sharing memory with the receiver: these are ops.
_VIEW_PROPERTIES = {"data", "T", "mT", "H", "mH", "real", "imag"}
_SET_OPS = {"requires_grad"}  # property writes that are ops (they change autograd metadata)

# Conversion family: the result is the input moved to another device or dtype.
CONVERSIONS = {
    "to", "cuda", "cpu", "double", "float", "half", "bfloat16", "int", "long", "short", "bool",
    "char", "byte", "type", "type_as", "to_dense", "mps", "xpu",
}
# Factories that take a tensor argument only for its metadata.
_FACTORY_PREFIXES = ("new_",)
_FACTORY_SUFFIXES = ("_like",)
_FACTORY_NAMES = {"torch.tensor", "torch.as_tensor", "torch.asarray", "torch.from_numpy",
                  "torch.frombuffer", "torch.from_dlpack"}
# Draws from a random number generator: they matter for replay on another device.
RANDOM = {
    "rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson",
    "rand_like", "randn_like", "randint_like", "uniform_", "normal_", "bernoulli_",
    "exponential_", "geometric_", "log_normal_", "cauchy_", "random_", "dropout", "dropout_",
    "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "rrelu", "rrelu_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
    "xavier_normal_", "trunc_normal_", "orthogonal_", "sparse_", "gumbel_softmax",
}

_BACKWARD_FUNCS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}


_INPLACE_DUNDERS = frozenset((
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__", "__imatmul__",
    "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__setitem__"))


class Spec:
    """A callable's name and how the recorder handles it."""

    __slots__ = ("name", "kind", "base", "factory", "random", "conversion", "meta", "inplace", "unversioned",
                 "code")

    def __init__(self, name: str, kind: int, code=None):
        self.name = name
        self.kind = kind
        # The callable's own Python code: its first call handed itself to the mode, so
        # that frame is not the op's caller (``source.user_call``).
        self.code = code
        self.base = name.rsplit(".", 1)[-1]
        self.factory = (
            name in _FACTORY_NAMES
            or self.base.startswith(_FACTORY_PREFIXES)
            or self.base.endswith(_FACTORY_SUFFIXES)
        )
        self.random = self.base in RANDOM
        self.conversion = name.startswith("Tensor.") and self.base in CONVERSIONS
        self.meta = name.startswith("Tensor.requires_grad")  # changes autograd metadata only
        # writes its first argument (a tensor, or each tensor of a list): ``add_``,
        # ``_foreach_addcdiv_``, ``_fused_adam_``, ``-=``, ``t[i] = v``
        self.inplace = not self.meta and (
            (self.base.endswith("_") and not self.base.endswith("__")) or self.base in _INPLACE_DUNDERS)
        self.unversioned = _unversioned_writes(self.base) if self.inplace and self.base.startswith("_fused_") else None


def _unversioned_writes(base: str):
    """``{position: argument name}`` of the arguments a fused optimizer op
    (``torch._fused_adam_``) writes without moving their version counters, from its
    schema; None for another op. Its ``grads`` are written only to unscale them, when it
    is given a ``grad_scale``."""
    try:
        schema = getattr(torch.ops.aten, base).default._schema
        return {i: a.name for i, a in enumerate(schema.arguments) if a.alias_info is not None and a.alias_info.is_write}
    except Exception:
        return None


def unversioned_writes(spec: Spec, kwargs) -> set | None:
    """The positions of the arguments a call to ``spec`` (with ``kwargs``) writes without
    moving their version counters: a fused optimizer op's parameters and state, its
    gradients too when it unscales them, nothing when its ``found_inf`` says a loss
    scaler skips this step (the op then writes nothing); None for another op."""
    if spec.unversioned is None:
        return None
    found_inf = kwargs.get("found_inf")
    if found_inf is not None:
        with hidden():
            if float(found_inf) != 0:
                return None
    scaled = kwargs.get("grad_scale") is not None
    return {i for i, name in spec.unversioned.items() if name != "grads" or scaled}


def unversioned_written(positions: set, pos) -> bool:
    """True when input ``pos`` (``3``, or ``"0.2"``: an item of a list) is an argument at
    one of ``positions`` (:func:`unversioned_writes`)."""
    top = pos if type(pos) is int else int(pos.split(".", 1)[0]) if type(pos) is str and pos[:1].isdigit() else None
    return top in positions


def qualified_name(func) -> str:
    """Return the trace-format name of a torch callable (``torch.add``,
    ``Tensor.add_``, ``Tensor.data``, ``torch.nn.functional.linear``)."""
    if func is torch.autograd.backward:
        return "torch.autograd.backward"
    if func is torch.autograd.grad:
        return "torch.autograd.grad"
    if func is torch._C._set_grad_enabled:
        return "torch.set_grad_enabled"
    try:
        name = resolve_name(func)
    except Exception:
        name = None
    if name and name.startswith("torch.") and name.count(".") == 1:
        # resolve_name maps each function to one name of its overload table: torch.mm
        # comes back as torch.spmm. A function torch holds under its own name is that.
        own = getattr(func, "__name__", None)
        if own and own[0] != "_" and own != name[len("torch."):] and getattr(torch, own, None) is func:
            name = f"torch.{own}"
    if not name:
        mod = getattr(func, "__module__", None) or ""
        qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        name = f"{mod}.{qual}" if mod else qual
    if name.startswith("torch.Tensor."):
        name = name[len("torch."):]
    if name.endswith(".__get__"):
        name = name[: -len(".__get__")]
    return name


def spec_of(func) -> Spec:
    """Classify a callable the first time the recorder meets it."""
    spec = _classify(func)
    spec.code = getattr(func, "__code__", None)
    return spec


def _classify(func) -> Spec:
    name = qualified_name(func)
    if func in _BACKWARD_FUNCS:
        return Spec(name, BACKWARD)
    if func is torch._C._set_grad_enabled:
        return Spec(name, GRAD_MODE)
    if name.startswith(("profiler.", "torch.ops.profiler", "torch._C._autograd")) or name in _PASS_FUNCTIONS:
        return Spec(name, PASS)
    if name.startswith("Tensor."):
        attr = name[len("Tensor."):]
        if attr == "grad":
            return Spec(name, GRAD_READ)
        if attr == "data.__set__":
            return Spec(name, DATA_SET)
        if attr.endswith(".__set__"):
            return Spec(name, OP if attr[: -len(".__set__")] in _SET_OPS else PASS)
        if attr in _PASS_METHODS:
            return Spec(name, PASS)
        prop = getattr(torch.Tensor, attr, None)
        if isinstance(prop, property) or type(prop).__name__ == "getset_descriptor":
            return Spec(name, OP if attr in _VIEW_PROPERTIES else PASS)
    return Spec(name, OP)


SPECS: dict = {}  # callable -> Spec, for the whole process (see cached_spec; the mode reads it first)
_SPECS_MAX = 8192
_FUNCTION_TYPES = (type(torch.add), type(torch.Tensor.add), type(torch.Tensor.__add__),
                   type(torch.Tensor.shape.__get__))


def lasting(func) -> bool:
    """True when ``func`` lives as long as torch does and holds nothing of the
    program's: a C function or method of torch, a property's getter or setter, a
    module-level Python function of torch. Its spec may then be kept for the whole
    process; a bound method or a closure could keep the program's objects alive."""
    if isinstance(func, _FUNCTION_TYPES):
        owner = getattr(func, "__self__", None)
        return owner is None or isinstance(owner, (type, types.ModuleType)) or type(owner).__name__ in (
            "getset_descriptor", "property", "member_descriptor")
    return (isinstance(func, types.FunctionType) and func.__closure__ is None
            and (getattr(func, "__module__", None) or "").startswith("torch"))


def cached_spec(func) -> Spec:
    """Return ``spec_of(func)``, computed once per process for a lasting callable
    (the spec is a function of the callable alone); None for any other callable,
    which the caller classifies and caches for itself."""
    spec = SPECS.get(func)
    if spec is None and lasting(func):
        if len(SPECS) >= _SPECS_MAX:
            SPECS.clear()
        spec = SPECS[func] = spec_of(func)
    return spec


# Build torch's table of overridable functions now, at import, rather than at the
# first op of a traced program: building it enters catch_warnings() too.
try:
    resolve_name(torch.add)
except Exception:  # pragma: no cover - names then fall back to __qualname__
    pass
