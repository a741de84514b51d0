"""Scoring: metrics (chrF++, BLEU, TER, COMET), bootstrap intervals, failure and language checks, verdicts.
"""
