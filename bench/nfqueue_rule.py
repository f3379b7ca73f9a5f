"""The NFQUEUE rule the C binding's passthru reads from (bench/passthru.py (b)): UDP to one port,
to one queue, bypass, counted, in a table of its own, made over nf_tables netlink with the
x_tables NFQUEUE target as divertgui's handles are. Run it in the receiving namespace:

    python bench/nfqueue_rule.py add PORT QUEUE | hits | delete
"""

from __future__ import annotations

import sys

from divertgui.engine.backends import nftables
from divertgui.engine.backends.netfilter_rules import BASE_PRIORITY, HOOKS, packet_matches
from divertgui.engine.filter.kernel import kernel_test

TABLE = "dgbench"
FAMILY = nftables.NFPROTO_IPV4


def main(argv: list[str]) -> int:
    with nftables.NftablesSocket() as sock:
        if argv[0] == "add":
            port, queue = int(argv[1]), int(argv[2])
            match = kernel_test(f"udp.DstPort == {port}", 4, "I", use_bpf=True).match
            chain, hook, kind = HOOKS["I"]
            sock.apply([nftables.new_table(FAMILY, TABLE),
                        nftables.new_chain(FAMILY, TABLE, chain, (hook, BASE_PRIORITY, kind)),
                        nftables.new_rule(FAMILY, TABLE, chain, packet_matches(match)[0][0] + [
                            nftables.counter(), nftables.nfqueue_target(queue, 1, bypass=True)])])
        elif argv[0] == "hits":
            print(sum(rule.packets or 0 for rule in sock.rules(FAMILY, TABLE)))
        elif argv[0] == "delete":
            sock.apply([nftables.delete_table(FAMILY, TABLE)])
        else:
            raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
