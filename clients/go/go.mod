// The Go client module: package skygev1 (import "github.com/skyge/skyge/clients/go/skyge/v1"),
// generated from ../../protos by `python protos/generate.py --lang go`, not committed.
// After generating: `go mod tidy` adds google.golang.org/grpc and google.golang.org/protobuf.
module github.com/skyge/skyge/clients/go

go 1.23
