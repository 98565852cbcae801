"""The backward nodes of fastnn.linear_act and fastnn.mlp (csrc/common/autograd_node.h) behave as
torch's own nodes do: names, hooks, saved-tensor hooks and checkpointing, the in-place check,
retain_graph, anomaly mode, forward-mode AD refused, and compiled autograd."""
import pytest
import torch

import fastnn

OPS = ["linear_act", "mlp"]


def make(op, bias=True, x_grad=True, seed=0):
    """Inputs and a function of them for op; returns (f, leaves)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_(x_grad)
    if op == "linear_act":
        w = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
        b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
        leaves = [t for t in (x, w, b) if t is not None and t.requires_grad]
        return (lambda: fastnn.linear_act(x, w, b, "gelu")), leaves
    ws = [torch.randn(o, i, generator=g, dtype=torch.float64, requires_grad=True) for i, o in ((5, 8), (8, 3))]
    bs = [torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True) if bias else None, None]
    leaves = [t for t in (x, *ws, *bs) if t is not None and t.requires_grad]
    return (lambda: fastnn.mlp(x, ws, bs, ["tanh", "silu"])), leaves


def grads_of(f, leaves, **kw):
    for t in leaves:
        t.grad = None
    y = f()
    (y * y).sum().backward(**kw)
    return [t.grad.clone() for t in leaves]


@pytest.mark.parametrize("op", OPS)
def test_node_name_and_edges(op):
    f, leaves = make(op)
    y = f()
    assert y.grad_fn.name() == {"linear_act": "LinearActBackward", "mlp": "MlpBackward"}[op]
    # one edge per tensor input (mlp: input, the weights, the defined biases)
    assert len(y.grad_fn.next_functions) == len(leaves)
    assert all(fn is not None for fn, _ in y.grad_fn.next_functions)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_grad", [True, False])
def test_compiled_autograd_same_gradients(op, bias, x_grad):
    from torch._dynamo import compiled_autograd
    torch._dynamo.reset()
    f, leaves = make(op, bias, x_grad)
    want = grads_of(f, leaves)
    with compiled_autograd._enable(torch.compile(backend="eager")):
        got = grads_of(f, leaves)
    # the node went through compiled autograd (bound as an op of its graph), not around it
    name = {"linear_act": "LinearActBackward", "mlp": "MlpBackward"}[op]
    assert any(n.startswith("CppNode" + name) for n in dir(compiled_autograd.ops))
    for a, e in zip(got, want):
        assert torch.equal(a, e)


@pytest.mark.parametrize("op", OPS)
def test_saved_tensor_hooks_and_checkpoint(op):
    f, leaves = make(op)
    want = grads_of(f, leaves)
    packed, unpacked = [], []

    def pack(t):
        packed.append(t)
        return t.clone()  # backward must read what unpack returns

    def unpack(t):
        unpacked.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        got = grads_of(f, leaves)
    assert packed and len(unpacked) == len(packed)
    for a, e in zip(got, want):
        assert torch.equal(a, e)

    from torch.utils.checkpoint import checkpoint
    for t in leaves:
        t.grad = None
    y = checkpoint(f, use_reentrant=False)
    (y * y).sum().backward()
    for t, e in zip(leaves, want):
        assert torch.equal(t.grad, e)


@pytest.mark.parametrize("op", OPS)
def test_modified_saved_tensor_is_refused(op):
    f, leaves = make(op)
    y = f()
    with torch.no_grad():
        leaves[1].add_(1.0)  # a weight, saved for backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("op", OPS)
def test_retain_graph_and_second_backward(op):
    f, leaves = make(op)
    once = grads_of(f, leaves)
    for t in leaves:
        t.grad = None
    y = f()
    y.sum().backward(retain_graph=True)
    first = [t.grad.clone() for t in leaves]
    y.sum().backward()
    for t, a in zip(leaves, first):
        torch.testing.assert_close(t.grad, 2 * a, rtol=1e-15, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        y.sum().backward()
    assert len(once) == len(leaves)


@pytest.mark.parametrize("op", OPS)
def test_node_hooks_and_anomaly_mode(op):
    f, leaves = make(op)
    want = grads_of(f, leaves)
    seen = []
    y = f()
    y.grad_fn.register_prehook(lambda gout: seen.append("pre"))
    y.grad_fn.register_hook(lambda gin, gout: seen.append(len(gin)))
    (y * y).sum().backward()
    assert seen == ["pre", len(leaves)]
    with torch.autograd.detect_anomaly():
        got = grads_of(f, leaves)
    for a, e in zip(got, want):
        assert torch.equal(a, e)


@pytest.mark.parametrize("op", OPS)
def test_forward_mode_ad_is_refused(op):
    import torch.autograd.forward_ad as fwAD
    f, leaves = make(op)
    x = leaves[0]
    with fwAD.dual_level():
        dual = fwAD.make_dual(x.detach(), torch.ones_like(x))
        if op == "linear_act":
            call = lambda: fastnn.linear_act(dual, leaves[1], leaves[2], "gelu")
        else:
            call = lambda: fastnn.mlp(dual, leaves[1:3], [leaves[3], None], ["tanh", "silu"])
        with pytest.raises(RuntimeError, match=f"fastnn.{op}: jvp is not implemented"):
            call()


@pytest.mark.parametrize("op", OPS)
def test_torch_func_transforms_are_refused_not_wrong(op):
    # A node records at one functorch level: grad of grad came out wrong when it was allowed, so
    # differentiating through the op inside torch.func is an error naming the op.
    f, leaves = make(op)
    w = leaves[1].detach()

    x = leaves[0].detach()
    if op == "linear_act":
        g = lambda wi: fastnn.linear_act(x, wi, leaves[2].detach(), "gelu").sum()
    else:
        g = lambda wi: fastnn.mlp(x, [wi, leaves[2].detach()], [leaves[3].detach(), None], ["tanh", "silu"]).sum()
    for transform in (torch.func.grad, lambda fn: (lambda wi: torch.func.grad(lambda v: torch.func.grad(fn)(v).sum())(wi)),
                      torch.func.jacrev):
        with pytest.raises(RuntimeError, match=f"fastnn.{op}: cannot be differentiated inside torch.func"):
            transform(g)(w)
    # vmap alone (nothing differentiated) still runs the op
    if op == "linear_act":
        batched = torch.func.vmap(lambda xi: fastnn.linear_act(xi, w, leaves[2].detach(), "gelu"))(x.unsqueeze(1))
        torch.testing.assert_close(batched.squeeze(1), fastnn.linear_act(x, w, leaves[2].detach(), "gelu"))
