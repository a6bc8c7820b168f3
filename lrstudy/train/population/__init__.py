"""The population engine: same-shape trials trained together as one vmapped, stacked model.

`form_populations` decides which trials may share a population (and why the others may not);
`run_population` trains one population and returns, per member, what `run_trial` would return for
that trial alone, while handing each member's metric rows to the caller as the trial's own
tracking callback would log them.
"""

from lrstudy.train.population.fit import fit_population, run_population
from lrstudy.train.population.grouping import (
    PopulationKey,
    default_population_size,
    form_populations,
    population_key,
)
from lrstudy.train.population.members import MemberResult
from lrstudy.train.population.module import PopulationModule
from lrstudy.train.population.stacked import NotVectorisable, vectorise_problem, vectorises

__all__ = [
    "MemberResult",
    "NotVectorisable",
    "PopulationKey",
    "PopulationModule",
    "default_population_size",
    "fit_population",
    "form_populations",
    "population_key",
    "run_population",
    "vectorise_problem",
    "vectorises",
]
