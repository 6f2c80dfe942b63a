"""Real data read offline: GLUE from its official TSV files (``effx.data.glue``) and the input
lengths real datasets have (``effx.data.typical_lengths``), which the tipping-point study compares
with measured tipping points. Data files are read where they lie and never copied into the repo.
"""
