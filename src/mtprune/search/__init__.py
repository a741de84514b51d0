"""Layer search: importance of each layer by translation quality, iterative removal, budgets, workers.
"""
