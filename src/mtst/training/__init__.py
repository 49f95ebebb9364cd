"""Training: strategies, the plan they make, the loop that runs it and the run directory it writes."""
