"""Transkimmer (Guan et al., ACL 2022): layer-wise token skimming over a BERT-family encoder,
measured against an unpadded baseline, an equal-budget baseline, fewer layers and top-k pruning.

Model: predictor.py (skim predictor, straight-through Gumbel decision), model.py (the masked
training computation, two variants), removal.py (inference with dropped tokens gathered away),
topk.py (top-k attention pruning, the non-learned reference), encoders.py (pre-trained encoders,
the fewer-layer cut), flops.py (analytic FLOPs).
Training: data.py (tokenisation, bucketed and seeded batch orders), loss.py (losses; our lambda
in the official code's units), train.py (one resumable training stage).
Study: jobs.py (``Job``: one unit of work, its key and dependencies), execute.py (``run_job``:
train or resume, then measure), measure.py (metrics, FLOPs, paired wall clock), budget.py (CPU
time of a protocol), report.py and figures.py (analysis of the recorded results), scope.py
(what of a plan is recorded and what it cuts), claims.py (against the paper's claims and the
SST-2 target), recipes.py (distillation and frozen decisions
against the plain recipe), noise.py (the dev set's and the training's noise of such a change)
and devices.py (the GPU run beside the CPU's; operators and host reads of a forward).
"""
