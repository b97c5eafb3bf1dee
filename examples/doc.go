// Package examples holds copyable YAML for users of stsroller; its test
// decodes every object strictly, so the examples cannot drift from the API.
package examples
