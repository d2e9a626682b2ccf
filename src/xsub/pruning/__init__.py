"""Finding subnetworks, one idea per module: `importance` (gate-gradient importance of heads and MLPs),
`structured` (the iterative head/MLP pruning loop), `magnitude` (one-shot global L1 over weights) and
`imp` (iterative magnitude pruning with rewinding). Masks are applied through `xsub.subnetwork`."""
