"""Where packets come from: netfilter (nfqueue), WinDivert (pydivert), a capture file (replay) or the demo network."""
