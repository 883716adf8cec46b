// Request hashes are stored with remembered requests (idempotency) and inside page tokens, so
// their bytes must never change: each is checked against the original computation (copy the
// message, clear the fields, serialize deterministically, SHA-256).
#include <openssl/sha.h>

#include "absl/strings/escaping.h"
#include "common/api/api.h"
#include "continuum/scheduling/v1/scheduling_service.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "gtest/gtest.h"

namespace continuum::api {
namespace {

namespace sv1 = ::continuum::scheduling::v1;

std::string OriginalHashWithout(const google::protobuf::Message& request, std::vector<std::string> fields) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  for (const auto& f : fields) {
    if (const auto* fd = copy->GetDescriptor()->FindFieldByName(f)) copy->GetReflection()->ClearField(copy.get(), fd);
  }
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy->SerializeToCodedStream(&coded);
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), sizeof(digest)));
}

TEST(RequestHashTest, Sha256HexIsTheStandardDigest) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(RequestHashTest, IsTheOriginalComputationWithoutCopyingTheRequest) {
  sv1::BookAppointmentRequest book;
  EXPECT_EQ(RequestHash(book), OriginalHashWithout(book, {"request_id"})) << "empty request";
  book.set_parent("clinics/kap");
  book.mutable_appointment()->set_client("clinics/kap/people/casey");
  book.mutable_appointment()->set_provider("clinics/kap/people/ther");
  book.mutable_appointment()->mutable_start_time()->set_seconds(1795000000);
  book.set_propose(true);
  const std::string without_id = RequestHash(book);
  EXPECT_EQ(without_id, OriginalHashWithout(book, {"request_id"}));
  book.set_request_id("book-1");  // field 4, written after the nested message
  EXPECT_EQ(RequestHash(book), OriginalHashWithout(book, {"request_id"}));
  EXPECT_EQ(RequestHash(book), without_id) << "the request id is not part of the request";
  book.set_propose(false);
  EXPECT_NE(RequestHash(book), without_id) << "every other field is";

  sv1::ListAppointmentsRequest list;  // page tokens hash without page_token and page_size
  list.set_parent("clinics/kap");
  list.add_kinds(static_cast<continuum::common::v1::AppointmentKind>(1));
  list.add_kinds(static_cast<continuum::common::v1::AppointmentKind>(2));
  list.set_page_size(50);
  list.set_page_token("abc");
  list.set_provider("clinics/kap/people/ther");
  const std::string token = MakePageToken(7, list);
  auto offset = ParsePageToken(token, list);
  ASSERT_TRUE(offset.ok()) << offset.status();
  EXPECT_EQ(*offset, 7);
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
  EXPECT_EQ(raw, "7:" + OriginalHashWithout(list, {"page_token", "page_size"}).substr(0, 16));
}

TEST(NewUuidTest, IsVersion7AndSortsByTime) {
  const absl::Time t = absl::FromUnixMillis(1795000000123);
  const std::string a = NewUuidAt(t), b = NewUuidAt(t), later = NewUuidAt(t + absl::Milliseconds(1));
  ASSERT_EQ(a.size(), 36u) << a;
  EXPECT_EQ(a.substr(0, 8) + a.substr(9, 4), "01a1ee565e7b") << a;  // 1795000000123 ms = 0x1a1ee565e7b, 48 bits
  EXPECT_EQ(a[14], '7') << a;                                   // version
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos) << a;  // RFC 9562 variant
  EXPECT_NE(a, b);  // 74 random bits within one millisecond
  EXPECT_LT(a, later);
  EXPECT_LT(b, later);
}

}  // namespace
}  // namespace continuum::api
