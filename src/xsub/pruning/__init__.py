"""Finding subnetworks: structured (heads, MLPs) by gate-gradient importance, and magnitude pruning."""
