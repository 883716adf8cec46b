#include "common/api/idempotency.h"

#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "common/testing/harness.h"
#include "common/time/clock.h"
#include "google/protobuf/wrappers.pb.h"
#include "gtest/gtest.h"

namespace continuum::api {
namespace {

using google::protobuf::StringValue;

// RunIdempotent on both backends. The mutation bumps a counter and answers with its new value,
// so a change applied twice shows in the counter.
class IdempotencyTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto url = testing::DatabaseUrl(GetParam(), dir_, "idempotency.db");
    ASSERT_TRUE(url.ok()) << url.status();
    auto db = db::Open({.url = *url});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_TRUE(db::ApplyMigrations(*db_, "idempotency", IdempotencyMigrations()).ok());
    ASSERT_TRUE(db_->InTransaction([](db::Tx& tx) {
      return tx.ExecScript("CREATE TABLE counter (id TEXT PRIMARY KEY, n BIGINT NOT NULL);"
                           "INSERT INTO counter VALUES ('c', 0)");
    }).ok());
  }

  // Bumps the counter; refuses (FAILED_PRECONDITION) once it has reached `refuse_from`.
  absl::StatusOr<StringValue> Bump(const std::string& request_id, const std::string& request, int64_t refuse_from) {
    StringValue req;
    req.set_value(request);
    return RunIdempotent<StringValue>(*db_, clock_, "people/a", "Bump", request_id, req,
                                      [&](db::Tx& tx) -> absl::StatusOr<StringValue> {
      ASSIGN_OR_RETURN(db::Rows rows, tx.Query("SELECT n FROM counter WHERE id = 'c'"));
      const int64_t n = rows.at(0).Int(0);
      if (n >= refuse_from) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "LIMIT_REACHED", absl::StrCat("already ", n));
      }
      RETURN_IF_ERROR(tx.Exec("UPDATE counter SET n = n + 1 WHERE id = 'c'").status());
      StringValue out;
      out.set_value(absl::StrCat(n + 1));
      return out;
    });
  }

  int64_t Counter() {
    auto rows = db_->Query("SELECT n FROM counter WHERE id = 'c'");
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? rows->at(0).Int(0) : -1;
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<db::Database> db_;
};

// A retry answers with the first call's response and changes nothing (the retry's own run of
// the mutation, made before it is known to be a retry, is rolled back).
TEST_P(IdempotencyTest, RetryAnswersFromTheFirstCallAndAppliesNothing) {
  auto first = Bump("id-1", "bump", 100);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->value(), "1");
  for (int i = 0; i < 3; ++i) {
    auto again = Bump("id-1", "bump", 100);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->value(), "1");
  }
  EXPECT_EQ(Counter(), 1);
  auto other = Bump("id-2", "bump", 100);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->value(), "2") << "a new request_id is a new request";
  EXPECT_EQ(Counter(), 2);
}

// A retry whose mutation would now be refused (the first call changed what it checks) is
// still answered with the first call's response.
TEST_P(IdempotencyTest, RetryThatTheMutationWouldNowRefuseIsAnsweredFromTheFirstCall) {
  auto first = Bump("id-1", "bump", 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->value(), "1");
  auto again = Bump("id-1", "bump", 1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->value(), "1");
  auto refused = Bump("id-2", "bump", 1);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(ErrorReason(refused.status()), "LIMIT_REACHED");
  EXPECT_EQ(Counter(), 1);
}

// The same request_id with a different request is refused, whether the mutation would succeed
// or fail; a refused request is not remembered, so the request_id stays free.
TEST_P(IdempotencyTest, ReusedRequestIdIsRefusedAndRefusalsAreNotRemembered) {
  ASSERT_TRUE(Bump("id-1", "bump", 100).ok());
  auto reused = Bump("id-1", "something else", 100);
  EXPECT_EQ(reused.status().code(), absl::StatusCode::kAlreadyExists) << reused.status();
  EXPECT_EQ(ErrorReason(reused.status()), "REQUEST_ID_REUSED");
  auto reused_refused = Bump("id-1", "something else", 0);
  EXPECT_EQ(ErrorReason(reused_refused.status()), "REQUEST_ID_REUSED") << reused_refused.status();
  EXPECT_EQ(Counter(), 1);

  auto refused = Bump("id-3", "bump", 0);
  EXPECT_EQ(ErrorReason(refused.status()), "LIMIT_REACHED") << refused.status();
  auto later = Bump("id-3", "bump", 100);
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->value(), "2") << "the refusal was not remembered";
  EXPECT_EQ(Counter(), 2);
}

INSTANTIATE_TEST_SUITE_P(Backends, IdempotencyTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace continuum::api
