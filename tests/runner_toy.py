"""A toy study for the runner's tests (imported by the spawned worker, hence a module of its own).

Units of series "grow": 0 MB, then ``grow_mb``, then 0 MB again (skipped once the second ran out
of memory); series "broken": one unit that raises; series "fine": one unit that logs and succeeds.
"""
import os
import time

from effx import params as p
from effx.results import metric
from effx.study import Record, Study, Unit

PARAMETERS = {"grow_mb": p.positive_int("MB the second unit of 'grow' allocates", default=10),
              "hold_s": p.positive_number("seconds it holds them", default=0.1),
              "fail": p.flag("the 'broken' unit raises", default=True),
              "sleep_s": p.positive_number("seconds the 'fine' unit sleeps", default=0.01),
              "pid_file": p.Param(lambda name, value: str(value),
                                  "where the 'fine' unit writes its worker's parent's pid",
                                  default="")}


def units(P):
    grow = [Unit({"series": "grow", "i": i}, f"grow {i}", series="grow") for i in range(3)]
    return grow + [Unit({"series": "broken"}, "broken", series="broken"),
                   Unit({"series": "fine"}, "fine", series="fine", cost_s=2.0)]


def execute(unit, P, ctx):
    if unit.key["series"] == "broken" and P["fail"]:
        raise ValueError("this unit is broken on purpose")
    if unit.key["series"] == "grow" and unit.key["i"] == 1:
        block = bytearray(P["grow_mb"] * 2**20)
        for i in range(0, len(block), 4096):      # touch every page: resident, not just reserved
            block[i] = 1
        time.sleep(P["hold_s"])
    if unit.key["series"] == "fine":
        if P["pid_file"]:
            with open(P["pid_file"], "a") as f:
                f.write(f"{os.getppid()}\n")
        time.sleep(P["sleep_s"])
    ctx.log(f"unit {unit.label} working")
    return [Record(point=dict(unit.key, part=j), metrics={"x": metric(j, "1")}) for j in range(2)]


STUDY = Study(name="runner_toy", title="Toy", part="Studies", position=99, parameters=PARAMETERS,
              units=units, execute=execute)
