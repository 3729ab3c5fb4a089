//! Rust types for the ONNX schema (`proto/onnx.proto`), generated with protobuf-codegen's pure
//! Rust parser, so no `protoc` is needed.

fn main() {
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/onnx.proto")
        .cargo_out_dir("onnx-protos")
        .run_from_script();
}
