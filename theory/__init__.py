"""theory: claims about looped maps, with hypotheses, sympy-checked proofs and numeric checks.

The claims themselves (C1–C14 of the project's science notes) arrive with issue 7; this package
exists so that the dependency direction ``dynamo <- theory <- verify`` is fixed from the start.

>>> import theory
>>> theory.__name__
'theory'
"""

__all__: list[str] = []
