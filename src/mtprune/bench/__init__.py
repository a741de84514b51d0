"""Speed and cost measurement: interleaved rounds, their statistics and per-model costs in own processes.
"""
