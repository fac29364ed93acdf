# syntax=docker/dockerfile:1
# The onboarding worker's image: built in the Rust image, run from distroless (glibc, CA
# certificates, no shell, no package manager) as the numeric non-root user 65532, which the
# Deployment's runAsNonRoot can verify.
#   docker build -t <registry>/onboarding-worker:<tag> .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: build exactly the committed Cargo.lock. The cache mounts keep the registry and
# target directory between builds; the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p worker --bin worker \
    && install -D -m 0755 target/release/worker /out/worker

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/worker /worker
USER 65532:65532
# Health (/healthz, /readyz) and Prometheus metrics (/metrics).
EXPOSE 8080
ENTRYPOINT ["/worker"]
CMD ["run"]
