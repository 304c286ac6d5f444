# C-API declarations ext/ modules use that Cython's own cpython/*.pxd do not export in the form needed.

cdef extern from "Python.h":
    # object.__setattr__ without the class's __setattr__ (pydantic's frozen models refuse it):
    # fills the slots of a model instance built without running validation again.
    int PyObject_GenericSetAttr(object o, object name, object value) except -1
