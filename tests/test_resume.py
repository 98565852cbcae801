"""Resume: train, torch.save the model and optimizer state_dicts, load them into fresh objects in a
new process, carry on: bit-identical to the uninterrupted run, for every optimizer."""
import os
import subprocess
import sys

import torch

import fastnn

CONFIGS = {
    "Adam": dict(lr=1e-2, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=torch.tensor(1e-2)),
    "RMSprop": dict(lr=1e-3, centered=True, momentum=0.9),
    "SGD": dict(lr=1e-2, momentum=0.9, nesterov=True),
    "Adagrad": dict(lr=1e-2, lr_decay=0.01),
}
BEFORE, AFTER = 4, 3


def model():
    torch.manual_seed(0)
    return fastnn.nn.MLP([6, 16, 16, 3], activation="tanh")


def data(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(11, 6, generator=g), torch.randn(11, 3, generator=g)


def train(m, opt, steps):
    for s in steps:
        x, y = data(s)
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()


def optimizer(name, m):
    opts = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in CONFIGS[name].items()}
    return getattr(fastnn.optim, name)(m.parameters(), **opts)


def resume(directory):
    """Run in a fresh process: load each checkpoint, train AFTER more steps, save the parameters."""
    for name in CONFIGS:
        ck = torch.load(os.path.join(directory, f"{name}.pt"), weights_only=False)
        m = model()
        m.load_state_dict(ck["model"])
        opt = optimizer(name, m)
        opt.load_state_dict(ck["opt"])
        train(m, opt, range(BEFORE, BEFORE + AFTER))
        torch.save([p.detach() for p in m.parameters()], os.path.join(directory, f"{name}.out.pt"))


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    straight = {}
    for name in CONFIGS:
        m = model()
        opt = optimizer(name, m)
        train(m, opt, range(BEFORE))
        torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, tmp_path / f"{name}.pt")
        train(m, opt, range(BEFORE, BEFORE + AFTER))
        straight[name] = [p.detach() for p in m.parameters()]
    here = os.path.dirname(os.path.abspath(__file__))
    # The new process imports this very fastnn build (make sanitize runs another one than the repo's).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(fastnn.__file__)), here]))
    subprocess.run([sys.executable, "-c", f"import test_resume; test_resume.resume({str(tmp_path)!r})"],
                   cwd=here, env=env, check=True, timeout=300)
    for name in CONFIGS:
        resumed = torch.load(tmp_path / f"{name}.out.pt")
        for a, b in zip(straight[name], resumed):
            assert torch.equal(a, b), f"{name}: resumed training differs"


def test_torch_state_dict_into_fastnn_and_back_keeps_training_identical():
    for name in CONFIGS:
        ref = model()
        ref_opt = optimizer(name, ref)
        train(ref, ref_opt, range(6))
        m = model()
        opts = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in CONFIGS[name].items()}
        topt = getattr(torch.optim, name)(m.parameters(), foreach=False, **opts)
        train(m, topt, range(0))  # torch state before any step: fastnn must accept it
        fopt = optimizer(name, m)
        fopt.load_state_dict(topt.state_dict())
        train(m, fopt, range(3))
        topt2 = getattr(torch.optim, name)(m.parameters(), foreach=False, **opts)
        topt2.load_state_dict(fopt.state_dict())
        fopt2 = optimizer(name, m)
        fopt2.load_state_dict(topt2.state_dict())
        train(m, fopt2, range(3, 6))
        for a, b in zip(ref.parameters(), m.parameters()):
            assert torch.equal(a, b), f"{name}: training through torch's state_dict differs"
