// Package realollama runs the real Ollama server (v0.17.4) in tests: test
// tier 4. It stands beside ollamatest, the in-process fake, which is kept
// only for what the real server cannot be made to do on demand.
//
//   - The binary: built once from the Go module proxy by `make ollama`
//     (.ci/ollama) into CacheDir(), outside the repository, with its version
//     ldflag set; $GPUCTL_OLLAMA names another. Require skips a test without
//     it, and fails it under CI=true.
//
//   - A runnable model: a llama-architecture GGUF with random weights (fixed
//     seed) and a SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256
//     byte tokens, printable pieces) and a chat template, written with
//     Ollama's own fs/ggml.WriteGGUF. Tiny (~600 KB) loads in about 0.3 s on
//     the CPU runner; Heavy (~80 MB) is over serve's 64 MiB max_body.
//
//   - A registry: TLS on 127.0.0.1 with its own certificate, manifests and
//     blobs as registry.ollama.ai serves them (blob GETs redirected to
//     another host name, ranged reads), and a CONNECT proxy that makes it
//     registry.ollama.ai for a server started with Options.Registry, so
//     plain names ("tiny") pull from it and nothing leaves the machine.
//
//   - A server: Start runs `ollama serve` on 127.0.0.1:0 (the port read back
//     from its log) with its own HOME and OLLAMA_MODELS, and stops it, and
//     the runners it started, at the end of the test.
//
//     reg := realollama.StartRegistry(t)
//     reg.AddModel("tiny", realollama.Tiny)
//     srv := realollama.Start(t, realollama.Options{Registry: reg})
//     srv.Pull(ctx, "tiny")
//     reply, chunks, err := srv.Chat(ctx, "tiny", "hello")
package realollama
