"""Profiling: how effx times (alone and paired), measures memory, counts FLOPs and operators
(kernel launches and host reads) and attributes cost to Transformer components. The methods page
of the book describes exactly what these functions do.
"""
from effx.profiling.dispatches import count_dispatches  # noqa: F401
from effx.profiling.flops import count_flops  # noqa: F401
from effx.profiling.memory import peak_memory_bytes  # noqa: F401
from effx.profiling.paired import time_alternating, warm_up  # noqa: F401
from effx.profiling.point import make_step, measure_step  # noqa: F401
from effx.profiling.timing import fixed_threads, time_callable  # noqa: F401
