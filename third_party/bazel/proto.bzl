"""Compiles .proto files with the system protoc and grpc_cpp_plugin (Debian packages).

palisade_cc_proto(name, srcs, deps, grpc) declares a genrule that runs /usr/bin/protoc and a
cc_library `name` holding the generated messages (and gRPC stubs when grpc = True). Imports are
relative to the `proto/` directory, e.g. `import "palisade/v1/rules.proto";`, and so are the
generated headers: `#include "palisade/v1/rules.pb.h"`.
"""

_PROTO_ROOT = "proto"

def palisade_cc_proto(name, srcs, deps = [], grpc = False, visibility = None):
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]

    pkg = native.package_name()
    if not pkg.startswith(_PROTO_ROOT + "/"):
        fail("palisade_cc_proto must be used under //proto")

    grpc_flags = ""
    if grpc:
        grpc_flags = "--grpc_out=$(GENDIR)/proto --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin "

    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = ("/usr/bin/protoc -I" + _PROTO_ROOT + " -I/usr/include " +
               "--cpp_out=$(GENDIR)/proto " + grpc_flags +
               " ".join(["%s/%s" % (pkg, s) for s in srcs])),
    )

    native.filegroup(
        name = name + "_srcs",
        srcs = srcs + [d + "_srcs" for d in deps],
        visibility = visibility,
    )

    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        strip_include_prefix = "/" + _PROTO_ROOT,
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc"] if grpc else []),
        visibility = visibility,
    )
