"""Python threads doing independent torch work (each with its own generator), joined
by the main thread, which then combines their results."""

import threading

import torch

torch.manual_seed(0)

results = {}
lock = threading.Lock()


def worker(idx, n):
    g = torch.Generator().manual_seed(100 + idx)
    a = torch.randn(n, n, generator=g)
    w = torch.randn(n, 4, generator=g, requires_grad=True)
    out = torch.tanh(a @ w).pow(2).sum()
    out.backward()
    with lock:
        results[idx] = (out.detach(), w.grad.clone())


threads = [threading.Thread(target=worker, args=(i, 16 + 4 * i), name=f"worker-{i}") for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()

main_side = torch.randn(8, 8).matmul(torch.randn(8, 8)).trace()
for idx in sorted(results):
    out, g = results[idx]
    print(f"worker {idx}: out {out.item():.6f} grad sum {g.sum().item():.6f}")
total = torch.stack([results[i][0] for i in sorted(results)]).sum()
print(f"total {total.item():.6f}, main {main_side.item():.6f}")
