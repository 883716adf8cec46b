#include "common/status/errors.h"

#include "common/status/macros.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"

namespace continuum {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

google::rpc::Status Details(const grpc::Status& s) {
  google::rpc::Status proto;
  EXPECT_TRUE(proto.ParseFromString(s.error_details()));
  return proto;
}

TEST(ErrorsTest, FailedPreconditionCarriesErrorInfoOnTheWire) {
  absl::Status s = MakeError(absl::StatusCode::kFailedPrecondition, "CONSULTATION_NOT_FULFILLED",
                             "book and complete a consultation first", {{"client", "c1"}});
  grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(g.error_message(), "book and complete a consultation first");
  google::rpc::Status proto = Details(g);
  EXPECT_EQ(proto.code(), 9);
  ASSERT_EQ(proto.details_size(), 1);
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(proto.details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "CONSULTATION_NOT_FULFILLED");
  EXPECT_EQ(info.domain(), "continuum.health");
  EXPECT_EQ(info.metadata().at("client"), "c1");
}

TEST(ErrorsTest, InvalidFieldsListsEveryViolationInBadRequest) {
  absl::Status s = InvalidFields({{"clinic.time_zone", "must be an IANA zone like Europe/Berlin"},
                                  {"clinic.display_name", "must not be empty"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("clinic.time_zone: must be an IANA zone"));
  grpc::Status g = ToGrpcStatus(s);
  google::rpc::Status proto = Details(g);
  ASSERT_EQ(proto.details_size(), 2);
  google::rpc::BadRequest bad;
  ASSERT_TRUE(proto.details(1).UnpackTo(&bad));
  ASSERT_EQ(bad.field_violations_size(), 2);
  EXPECT_EQ(bad.field_violations(0).field(), "clinic.time_zone");
  EXPECT_EQ(bad.field_violations(1).field(), "clinic.display_name");
}

TEST(ErrorsTest, PlainStatusGetsADefaultReason) {
  grpc::Status g = ToGrpcStatus(absl::NotFoundError("clinics/x not found"));
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(Details(g).details(0).UnpackTo(&info));
  EXPECT_EQ(info.reason(), "NOT_FOUND");
}

TEST(ErrorsTest, InternalErrorsDoNotLeakDetails) {
  grpc::Status g = ToGrpcStatus(absl::InternalError("sqlite: no such column secret_col"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(g.error_message(), ::testing::Not(HasSubstr("secret_col")));
  EXPECT_THAT(g.error_message(), HasSubstr("reference"));
  EXPECT_TRUE(g.error_details().empty());
}

TEST(ErrorsTest, FromGrpcStatusKeepsReasonMetadataAndViolations) {
  absl::Status original = WithMetadata(
      MakeError(absl::StatusCode::kAborted, "SLOT_CONFLICT", "slot taken"), "resource", "rooms/1");
  absl::Status back = FromGrpcStatus(ToGrpcStatus(original));
  EXPECT_EQ(back.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(back.message(), "slot taken");
  EXPECT_EQ(ErrorReason(back), "SLOT_CONFLICT");
  EXPECT_THAT(ErrorMetadata(back), ElementsAre(Pair("resource", "rooms/1")));
  absl::Status bad = FromGrpcStatus(ToGrpcStatus(InvalidField("a.b", "bad")));
  ASSERT_EQ(ErrorFieldViolations(bad).size(), 1u);
  EXPECT_EQ(ErrorFieldViolations(bad)[0].field, "a.b");
}

TEST(ErrorsTest, OkMapsToOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(auto q, Half(h));
  return q;
}

absl::Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateErrorsAndUnwrapValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(3).message(), "odd");
}

}  // namespace
}  // namespace continuum
