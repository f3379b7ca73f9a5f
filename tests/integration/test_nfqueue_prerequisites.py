"""A kernel that refuses a handle's rule: the error names what the kernel lacks, and
nothing of the handle is left behind."""

import pytest

from divertgui.engine.backends import nftables
from divertgui.engine.errors import KernelFeatureError
from divertgui.engine.handle import Divert
from tests.integration.conftest import our_chains

pytestmark = pytest.mark.netns


def test_a_kernel_without_the_nfqueue_target_is_named(netns, monkeypatch):
    # A target no kernel has gets the answer a kernel without xt_NFQUEUE (or nft_compat) gives.
    monkeypatch.setattr(nftables, "nfqueue_target",
                        lambda first, count, bypass: nftables.xt_target("DGNOSUCH", 3, bytes(8)))
    with netns.entered(), pytest.raises(KernelFeatureError) as refused:
        Divert("udp").open()
    message = str(refused.value)
    assert "CONFIG_NFT_COMPAT" in message and "CONFIG_NETFILTER_XT_TARGET_NFQUEUE" in message
    assert "No such file or directory" in message and "\n" not in message
    assert our_chains(netns) == []


def test_a_kernel_without_the_bpf_match_is_named(netns, monkeypatch):
    monkeypatch.setattr(nftables, "bpf_match", lambda program: nftables.xt_match("dgnosuch", 1, bytes(8)))
    with netns.entered(), pytest.raises(KernelFeatureError) as refused:
        Divert("udp.DstPort == 1 or udp.SrcPort == 1").open()
    assert "CONFIG_NETFILTER_XT_MATCH_BPF" in str(refused.value)
    assert our_chains(netns) == []
