"""Transkimmer (Guan et al., ACL 2022): layer-wise token skimming over a BERT-family encoder.

predictor.py: the skim predictor and its straight-through Gumbel decision; model.py: the masked
(training) computation in two variants; removal.py: inference with skimmed tokens gathered away;
flops.py: analytic FLOPs; train.py: GLUE fine-tuning; measure.py: metrics, FLOPs, wall clock.
"""
