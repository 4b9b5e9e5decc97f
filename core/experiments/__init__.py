"""Experiments that check the advice on the user's own data: the race of the cases.

An experiment is built from jobs (its lanes are ordinary queued runs), so it sits above them.
"""
