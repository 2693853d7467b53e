"""Strategies that draw nothing: see hypothesis/__init__.py (a @given test never runs here)."""


class Strategy:
    def map(self, _f):
        return self

    def filter(self, _f):
        return self

    def flatmap(self, _f):
        return self

    def __or__(self, _other):
        return self


def _strategy(*_a, **_kw):
    return Strategy()


integers = lists = tuples = sampled_from = booleans = just = none = one_of = fixed_dictionaries = _strategy
text = binary = floats = dictionaries = builds = characters = sets = _strategy
