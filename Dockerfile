# syntax=docker/dockerfile:1
#
# stsroller's controller image: a static binary on distroless, running as
# 65532:65532 (the "nonroot" user), as deploy/ expects.
#   docker build -t stsroller:latest .
# Cross-builds for the target platform (docker buildx build --platform ...)
# without emulation: the builder runs on the build platform.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Modules first, so editing the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/stsroller ./cmd/stsroller

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/stsroller /stsroller
USER 65532:65532
ENTRYPOINT ["/stsroller"]
