"""Eight Python threads calling fastnn ops and optimizer steps on their own tensors at once give the
same bits as the same calls made one after another (each op parallel inside with OpenMP)."""
import threading

import torch

import fastnn

THREADS = 8


def work(i):
    g = torch.Generator().manual_seed(i)
    x = torch.randn(97, 33, generator=g, requires_grad=True)
    w1 = torch.nn.Parameter(torch.randn(40, 33, generator=g) / 6)
    b1 = torch.nn.Parameter(torch.randn(40, generator=g))
    w2 = torch.nn.Parameter(torch.randn(300, 40, generator=g) / 6)  # wide: the BLAS layer path
    w3 = torch.nn.Parameter(torch.randn(5, 300, generator=g) / 17)
    opt = (fastnn.optim.Adam, fastnn.optim.RMSprop, fastnn.optim.SGD, fastnn.optim.Adagrad)[i % 4](
        [w1, b1, w2, w3], lr=1e-2)
    for step in range(4):
        h = fastnn.linear_act(x, w1, b1, ("tanh", "gelu", "relu", "silu")[i % 4])
        y = fastnn.mlp(h, [w2, w3], [None, None], ["sigmoid", "identity"])
        loss = (y * torch.randn(y.shape, generator=g)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [t.detach().clone() for t in (w1, b1, w2, w3, x.grad)]


def test_threads_give_the_results_of_sequential_calls():
    sequential = [work(i) for i in range(THREADS)]
    results, errors = [None] * THREADS, []
    start = threading.Barrier(THREADS)

    def run(i):
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i in range(THREADS):
        for a, b in zip(results[i], sequential[i]):
            assert torch.equal(a, b), f"thread {i} differs from the sequential run"
