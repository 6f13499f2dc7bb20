# The operator image: a release build on Debian bookworm, then only the binary on distroless
# (glibc and CA certificates, no shell), running as the image's nonroot user 65532.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin mfa-recall

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/mfa-recall /mfa-recall
USER 65532:65532
ENTRYPOINT ["/mfa-recall"]
CMD ["operator"]
