"""The user's own torch extension points: a TorchFunctionMode that logs function names,
a Tensor subclass whose __torch_function__ logs calls, and a TorchDispatchMode that
logs aten ops, all around a small forward and backward."""

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._python_dispatch import TorchDispatchMode

torch.manual_seed(0)


def name_of(func):
    return resolve_name(func) or getattr(func, "__name__", repr(func))


class FunctionLog(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(name_of(func))
        return func(*args, **(kwargs or {}))


class AtenLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class LoggedTensor(torch.Tensor):
    log = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.log.append(name_of(func))
        return super().__torch_function__(func, types, args, kwargs)


w = torch.randn(4, 3, requires_grad=True)
x = torch.randn(5, 4)

with FunctionLog() as fn_log:
    y = torch.tanh(x @ w).sum(dim=1)
    loss = F.mse_loss(y, torch.ones(5))
print(f"function mode saw {len(fn_log.calls)} calls:")
print(" ", fn_log.calls)

with AtenLog() as aten_log:
    loss = (torch.sigmoid(x @ w) ** 2).mean()
    loss.backward()
print(f"dispatch mode saw {len(aten_log.ops)} aten ops:")
print(" ", aten_log.ops)

lx = x.as_subclass(LoggedTensor)
out = (lx * 2 + 1).relu().sum(0)
print(f"subclass saw {len(LoggedTensor.log)} calls, result type {type(out).__name__}:")
print(" ", LoggedTensor.log)
print("values:", [round(v, 5) for v in out.tolist()])
print("w.grad norm:", round(w.grad.norm().item(), 6))
