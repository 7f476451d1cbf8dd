"""The Adam arithmetic alone (`python -m bench.optim`): optd's numpy kernel against torch
foreach and fused."""
