# The operator image: a release build on Debian bookworm, then only the binaries on distroless
# (glibc and CA certificates, no shell), running as the image's nonroot user 65532. The console
# (crates/console) ships in the same image: the chart runs it with command /mfa-recall-console.
#
# Base images are pinned by digest, so a rebuild uses the bytes that were reviewed; a tag alone
# can move. The tag stays beside each digest for people and for Renovate/Dependabot, which bump
# both together. To move to a newer image: `crane digest rust:1.95-bookworm` (or
# `docker buildx imagetools inspect`), and the same for the distroless image. These digests were
# taken from public build logs of these tags: the machine this repository is developed on reaches
# no container registry (docs/security.md).
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mfa-recall --bin mfa-recall -p mfa-recall-console --bin mfa-recall-console

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/mfa-recall /mfa-recall
COPY --from=build /src/target/release/mfa-recall-console /mfa-recall-console
USER 65532:65532
ENTRYPOINT ["/mfa-recall"]
CMD ["operator"]
