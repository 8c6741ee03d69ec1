# syntax=docker/dockerfile:1
# A project image: the strata image with a project in it, for the CronJob that submits its
# daily run (deploy/k8s/base/cronjob-daily-medallion.yaml). From the repository root:
#
#   docker build -f deploy/project.Dockerfile --build-arg STRATA_IMAGE=strata:dev -t strata-medallion:dev .
ARG STRATA_IMAGE=ghcr.io/example/strata:0.1.0
FROM ${STRATA_IMAGE}
COPY --chown=10001:10001 examples/medallion /work/medallion
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/strata"]
CMD ["--help"]
