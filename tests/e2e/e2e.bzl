"""daemon_test: a C++ test that runs the real palisaded (and the emulator) through daemon.h.

Every such test talks gRPC to the daemon, builds log records and reads JSON from the emulator,
so those dependencies come with it; `deps` adds the test's own.
"""

_COMMON_DEPS = [
    ":daemon",
    "//proto/palisade/v1:palisade_cc_proto",
    "//services/cli:shipper",
    "//services/common:proto_time",
    "//third_party:absl",
    "//third_party:grpc",
    "//third_party:gtest_main",
    "//third_party:json",
]

def daemon_test(name, size = "medium", data = [], deps = []):
    native.cc_test(
        name = name,
        size = size,
        srcs = [name + ".cc"],
        data = data,
        deps = _COMMON_DEPS + [d for d in deps if d not in _COMMON_DEPS],
    )
