"""Analysis of measured tables: pure numpy/pandas, never runs a model.

A lower layer than ``effx.studies``: it imports nothing from ``effx.studies``, ``effx.models`` or
``effx.profiling``. ``tipping`` estimates tipping points (Diwan et al., ACL 2023) from paired
measurements, ``bootstrap`` holds the hierarchical bootstrap it uses, ``tipping_table`` turns
tidy result rows into one tipping point per (pair, metric, series); ``margins`` judges a change
whose standard error rests on few degrees of freedom (pooled spreads with shared reference runs,
Welch-Satterthwaite, t quantiles).
"""
