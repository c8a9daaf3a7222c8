/* Layout probe: compiled by build.rs against the headers of the interpreter the
 * extension is built for. It only evaluates sizeof/offsetof/constants at compile
 * time and exports them as a table; it never calls an internal function.
 * The Rust side compares this table with pycds-pyformat's static layout before
 * any archive is written or used. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#if PY_VERSION_HEX >= 0x030C0000
#include "internal/pycore_interp.h"
#endif
#include "internal/pycore_gc.h"
#include "internal/pycore_frame.h"
#include "internal/pycore_code.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#define E(name, value) { name, (int64_t)(value) }
typedef struct { const char *name; int64_t value; } pycds_probe_entry;

#if PY_VERSION_HEX >= 0x030C0000
#define IMMORTAL_REFCNT ((int64_t)_Py_IMMORTAL_REFCNT)
#define NEXT_FUNC_VERSION_OFFSET ((int64_t)offsetof(PyInterpreterState, func_state.next_version))
#else
#define IMMORTAL_REFCNT ((int64_t)-1)
#define NEXT_FUNC_VERSION_OFFSET ((int64_t)-1)
#endif

#ifdef Py_DEBUG
#define PROBE_DEBUG 1
#else
#define PROBE_DEBUG 0
#endif
#ifdef Py_TRACE_REFS
#define PROBE_TRACE_REFS 1
#else
#define PROBE_TRACE_REFS 0
#endif
#ifdef Py_GIL_DISABLED
#define PROBE_GIL_DISABLED 1
#else
#define PROBE_GIL_DISABLED 0
#endif

const pycds_probe_entry pycds_layout_probe[] = {
    E("py_version_hex", PY_VERSION_HEX),
    E("pointer_size", sizeof(void *)),
    E("long_bits_in_digit", PYLONG_BITS_IN_DIGIT),
    E("py_debug", PROBE_DEBUG),
    E("py_trace_refs", PROBE_TRACE_REFS),
    E("py_gil_disabled", PROBE_GIL_DISABLED),
    E("immortal_refcnt", IMMORTAL_REFCNT),
    E("frame_specials_size", FRAME_SPECIALS_SIZE),
    E("interp_next_func_version", NEXT_FUNC_VERSION_OFFSET),
    E("object_size", sizeof(PyObject)),
    E("var_object_size", sizeof(PyVarObject)),
    E("gc_head_size", sizeof(PyGC_Head)),
    E("code_consts", offsetof(PyCodeObject, co_consts)),
    E("code_names", offsetof(PyCodeObject, co_names)),
    E("code_exceptiontable", offsetof(PyCodeObject, co_exceptiontable)),
    E("code_flags", offsetof(PyCodeObject, co_flags)),
#if PY_VERSION_HEX < 0x030C0000
    E("code_warmup", offsetof(PyCodeObject, co_warmup)),
    E("code_linearray_entry_size", offsetof(PyCodeObject, _co_linearray_entry_size)),
    E("code_nplaincellvars", offsetof(PyCodeObject, co_nplaincellvars)),
    E("code_co_code_cache", offsetof(PyCodeObject, _co_code)),
    E("code_linearray", offsetof(PyCodeObject, _co_linearray)),
    E("quickening_warmup", QUICKENING_INITIAL_WARMUP_VALUE),
#else
    E("code_framesize", offsetof(PyCodeObject, co_framesize)),
    E("code_version", offsetof(PyCodeObject, co_version)),
    E("code_cached", offsetof(PyCodeObject, _co_cached)),
    E("code_instrumentation_version", offsetof(PyCodeObject, _co_instrumentation_version)),
    E("code_monitoring", offsetof(PyCodeObject, _co_monitoring)),
#endif
#if PY_VERSION_HEX >= 0x030D0000
    E("code_executors", offsetof(PyCodeObject, co_executors)),
#endif
    E("code_argcount", offsetof(PyCodeObject, co_argcount)),
    E("code_posonlyargcount", offsetof(PyCodeObject, co_posonlyargcount)),
    E("code_kwonlyargcount", offsetof(PyCodeObject, co_kwonlyargcount)),
    E("code_stacksize", offsetof(PyCodeObject, co_stacksize)),
    E("code_firstlineno", offsetof(PyCodeObject, co_firstlineno)),
    E("code_nlocalsplus", offsetof(PyCodeObject, co_nlocalsplus)),
    E("code_nlocals", offsetof(PyCodeObject, co_nlocals)),
    E("code_ncellvars", offsetof(PyCodeObject, co_ncellvars)),
    E("code_nfreevars", offsetof(PyCodeObject, co_nfreevars)),
    E("code_localsplusnames", offsetof(PyCodeObject, co_localsplusnames)),
    E("code_localspluskinds", offsetof(PyCodeObject, co_localspluskinds)),
    E("code_filename", offsetof(PyCodeObject, co_filename)),
    E("code_name", offsetof(PyCodeObject, co_name)),
    E("code_qualname", offsetof(PyCodeObject, co_qualname)),
    E("code_linetable", offsetof(PyCodeObject, co_linetable)),
    E("code_weakreflist", offsetof(PyCodeObject, co_weakreflist)),
    E("code_firsttraceable", offsetof(PyCodeObject, _co_firsttraceable)),
    E("code_extra", offsetof(PyCodeObject, co_extra)),
    E("code_adaptive", offsetof(PyCodeObject, co_code_adaptive)),
    E("tuple_items", offsetof(PyTupleObject, ob_item)),
    E("bytes_shash", offsetof(PyBytesObject, ob_shash)),
    E("bytes_sval", offsetof(PyBytesObject, ob_sval)),
    E("str_length", offsetof(PyASCIIObject, length)),
    E("str_hash", offsetof(PyASCIIObject, hash)),
    E("str_state", offsetof(PyASCIIObject, state)),
#if PY_VERSION_HEX < 0x030C0000
    E("str_wstr", offsetof(PyASCIIObject, wstr)),
    E("str_wstr_length", offsetof(PyCompactUnicodeObject, wstr_length)),
#endif
    E("str_ascii_size", sizeof(PyASCIIObject)),
    E("str_utf8_length", offsetof(PyCompactUnicodeObject, utf8_length)),
    E("str_utf8", offsetof(PyCompactUnicodeObject, utf8)),
    E("str_compact_size", sizeof(PyCompactUnicodeObject)),
#if PY_VERSION_HEX >= 0x030C0000
    E("long_tag", offsetof(PyLongObject, long_value.lv_tag)),
    E("long_digits", offsetof(PyLongObject, long_value.ob_digit)),
#else
    E("long_tag", offsetof(PyVarObject, ob_size)),
    E("long_digits", offsetof(PyLongObject, ob_digit)),
#endif
    E("float_value", offsetof(PyFloatObject, ob_fval)),
    E("complex_value", offsetof(PyComplexObject, cval)),
    E("float_size", sizeof(PyFloatObject)),
    E("complex_size", sizeof(PyComplexObject)),
};
const size_t pycds_layout_probe_len = sizeof(pycds_layout_probe) / sizeof(pycds_layout_probe[0]);

#ifdef PYCDS_PROBE_MAIN
#include <stdio.h>
int main(void) {
    for (size_t i = 0; i < pycds_layout_probe_len; i++)
        printf("%s %lld\n", pycds_layout_probe[i].name, (long long)pycds_layout_probe[i].value);
    return 0;
}
#endif
