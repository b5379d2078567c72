"""What flows and what acts: state, domain models, one node per module, the model seam."""
