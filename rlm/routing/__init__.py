"""Model groups and the routing of every LM call.

* :mod:`rlm.routing.spec` — the models file (groups, deployments, rules);
* :mod:`rlm.routing.table` — a config's groups with every deployment resolved;
* :mod:`rlm.routing.tokens` — counting a prompt's tokens cheaply before a call;
* :mod:`rlm.routing.router` — the decision for one call, with its reason;
* :mod:`rlm.routing.notes` — what the model is told about the groups it may ask for;
* :mod:`rlm.routing.served` — the ``[serve.NAME]`` deployments started on the cluster, as data.

:class:`rlm.lm.LMClient` makes the calls; ``docs/models.md`` describes it all.
"""

__all__: list[str] = []
