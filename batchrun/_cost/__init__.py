"""Cost: prices, what a run cost, the budget cap and the estimate before a run."""
