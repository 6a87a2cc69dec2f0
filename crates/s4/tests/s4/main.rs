//! Integration tests of s4, built as one binary: the S3 API through aws-sdk-s3 and t4's own
//! S3 backend (`sdk`), real clients (aws CLI, boto3) and a crash under load (`clients`),
//! hostile and starved conditions (`hardening`), the fuzz corpora (`fuzz_corpus`).

mod clients;
mod fuzz_corpus;
mod hardening;
mod sdk;
