package pathnorm_test

import (
	"fmt"

	"minimesh/api/pathnorm"
)

func ExampleNormalize() {
	for _, p := range []string{
		"/api/v1/users",
		"//api/./v1/../v2/%75sers",
		"/caf%c3%a9",
		"/admin;jsessionid=1",
		"/x%2F..%2Fadmin",
		"/%C0%AE%C0%AE/admin",
	} {
		n, err := pathnorm.Normalize(p)
		fmt.Printf("%-26s %q %v\n", p, n, err)
	}
	// Output:
	// /api/v1/users              "/api/v1/users" <nil>
	// //api/./v1/../v2/%75sers   "/api/v2/users" <nil>
	// /caf%c3%a9                 "/caf%C3%A9" <nil>
	// /admin;jsessionid=1        "" pathnorm: ';' path parameter in path
	// /x%2F..%2Fadmin            "" pathnorm: encoded '/' or '\' in path
	// /%C0%AE%C0%AE/admin        "" pathnorm: path is not valid UTF-8
}
