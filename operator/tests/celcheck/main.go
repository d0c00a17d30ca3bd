// celcheck validates StreamJob objects against a CRD exactly as the Kubernetes API server
// does, with the API server's own code (k8s.io/apiextensions-apiserver, the version the test
// bed's control plane is built from): the CRD itself (structural schema, CEL rules compile,
// CEL cost limits), then each object (OpenAPI schema and CEL rules). It lets
// operator/tests/crd_cel.rs check the generated CRD's rules without a cluster.
//
// Usage: celcheck <crd.yaml> < objects.json
//
// stdin: a JSON array of objects. stdout: {"crd": [errors], "objects": [[errors], ...]}, one
// list of error strings per object, in order.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type result struct {
	CRD     []string   `json:"crd"`
	Objects [][]string `json:"objects"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "celcheck:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: celcheck <crd.yaml> < objects.json")
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var v1 apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(text, &v1); err != nil {
		return fmt.Errorf("reading the CRD: %w", err)
	}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1)
	var crd apiextensions.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &crd, nil); err != nil {
		return fmt.Errorf("converting the CRD: %w", err)
	}
	ctx := context.Background()
	out := result{CRD: strings(crdvalidation.ValidateCustomResourceDefinition(ctx, &crd)), Objects: [][]string{}}

	version := crd.Spec.Versions[0].Name
	schema, err := apiextensions.GetSchemaForVersion(&crd, version)
	if err != nil || schema == nil || schema.OpenAPIV3Schema == nil {
		return fmt.Errorf("no schema for version %s: %v", version, err)
	}
	structural, err := structuralschema.NewStructural(schema.OpenAPIV3Schema)
	if err != nil {
		return fmt.Errorf("structural schema: %w", err)
	}
	schemaValidator, _, err := validation.NewSchemaValidator(schema.OpenAPIV3Schema)
	if err != nil {
		return fmt.Errorf("schema validator: %w", err)
	}
	celValidator := cel.NewValidator(structural, true, celconfig.PerCallLimit)

	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	// The API server's decoding: whole numbers become int64, as CEL and the schema expect.
	var objects []interface{}
	if err := utiljson.Unmarshal(input, &objects); err != nil {
		return fmt.Errorf("reading the objects: %w", err)
	}
	for i, item := range objects {
		obj, ok := item.(map[string]interface{})
		if !ok {
			return fmt.Errorf("object %d is not a JSON object", i)
		}
		errs := validation.ValidateCustomResource(nil, obj, schemaValidator)
		if celValidator != nil {
			celErrs, _ := celValidator.Validate(ctx, nil, structural, obj, nil, celconfig.RuntimeCELCostBudget)
			errs = append(errs, celErrs...)
		}
		out.Objects = append(out.Objects, strings(errs))
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func strings(errs field.ErrorList) []string {
	list := []string{}
	for _, e := range errs {
		list = append(list, e.Error())
	}
	return list
}
