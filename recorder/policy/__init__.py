"""Whether and how a call is recorded: the facts of a call, rules, direction, on-demand and pause
controls, consent, and the decision."""
