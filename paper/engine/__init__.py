"""The simulation core: data feed, strategy, risk, simulated broker, portfolio, metrics.

Nothing in this package imports Django. Backtests, fast replays and live-paced paper
sessions all run through `paper.engine.engine.Engine`.
"""
