"""Which transfer-learning case fits a data set: the four cases as data, and the advice.

Imports no torch: the Advisor page must answer instantly.
"""
