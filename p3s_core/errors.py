"""Errors the pack raises for bad input: each message says what to do about it."""


class P3SInputError(ValueError):
    """Input that the method cannot work with; the message tells the user how to fix it.

    ComfyUI reports an error's type as ``module.QualName`` unless the module is ``builtins``
    (``execution.full_type_name``); inside a custom node pack the module is a path such as
    ``custom_nodes/comfyui-p3s.p3s_core.errors``. The class says it lives in ``builtins`` so that
    API users see ``P3SInputError`` and the message alone (our addition). ``except P3SInputError``
    and ``isinstance`` work as before; only pickling by name is given up, which nothing uses.
    """


P3SInputError.__module__ = "builtins"
