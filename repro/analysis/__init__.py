"""From runs to verdicts: metrics, statistics, per-image outcomes, the decision rules of the claims and their simulation."""
