"""The registry (attnbench.variants.registry): every documented variant is there with
its family, paper, defaults and causal flag; names are not registered twice; a
flops that is not a function is refused."""

import pytest

import attnbench
import attnbench.variants
from attnbench.variants.registry import registered
from tests.helpers import BUILTIN, NoFlopsLinear


def test_all_documented_variants_are_registered():
    expected = {"softmax", "sdpa", "local", "strided", "longformer", "bigbird", "reformer", "routing",
                "sinkhorn", "linformer", "nystrom", "linear", "performer", "synthesizer", "fastformer", "aft",
                "lightconv", "dynamicconv", "compressed", "efficient", "rfa", "fnet", "gmlp", "mixer",
                "poolingformer"}
    assert expected <= set(BUILTIN), f"missing: {sorted(expected - set(BUILTIN))}"
    assert len([n for n in BUILTIN if not n.startswith("flex_")]) == 25


@pytest.mark.parametrize("name", BUILTIN)
def test_info_is_complete(name):
    info = attnbench.variant_info(name)
    assert info.name == name and info.family and info.complexity.startswith("O(")
    assert info.paper.count(".") == 1, f"{name}: paper should be an arXiv id, got {info.paper!r}"


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        attnbench.register("softmax", family="exact")(type(attnbench.build("softmax").core))


def test_registry_entries() -> None:
    expected = {
        "synthesizer": ("synthesizer", "2005.00743", {"mode": "dense", "k": 32}),
        "aft": ("aft", "2105.14103", {"mode": "simple", "window": 64}),
        "lightconv": ("conv", "1901.10430", {"kernel_size": 31}),
        "dynamicconv": ("conv", "1901.10430", {"kernel_size": 31}),
    }
    for name, (family, paper, defaults) in expected.items():
        info = attnbench.variant_info(name)
        assert (info.family, info.paper, info.defaults, info.causal) == (family, paper, defaults, True)
        assert info.complexity


def test_registered_with_the_documented_parameters():
    info = {name: attnbench.variant_info(name) for name in ("nystrom", "linear", "performer")}
    assert info["nystrom"].defaults == {"landmarks": 64, "pinv_iters": 6, "conv": 0}
    assert info["linear"].defaults == {"chunk": 64}
    assert info["performer"].defaults == {"features": 256, "chunk": 64, "seed": 0}
    expected = {"nystrom": ("lowrank", "2102.03902", False), "linear": ("kernel", "2006.16236", True),
                "performer": ("kernel", "2009.14794", True)}
    for name, (family, paper, causal) in expected.items():
        assert (info[name].family, info[name].paper, info[name].causal) == (family, paper, causal)


def test_register_rejects_a_flops_that_is_not_a_function():
    with pytest.raises(ValueError, match="flops must be a function"):
        attnbench.register("t-bad-flops", family="custom", flops=3)(NoFlopsLinear)
    assert "t-bad-flops" not in registered()
