# ext/endpointslice.pyx: EndpointSlice documents into fastmesh.config.model.endpointslice models.

cdef object _model(object cls, dict values, set fields_set)
cdef object _entry(object raw)
cdef object _conditions(object raw)
cdef object _port(object raw)
cpdef object parse_endpoint_slice(object doc)
