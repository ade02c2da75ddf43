"""Object storage: the S3 adapter (s3), the SigV4 presigner (presign) and the signer that runs it (signer).

Import the submodules directly: the API process imports presign/signer only, never aiobotocore (s3).
"""

import os

# The uploader's awscrt is installed beside the server (one distribution), and botocore then signs every request
# through the CRT. The service's own S3 calls keep botocore's Python signer, the one its presigner is checked
# against (tests/unit/test_presign.py) and the one its tests run with; set before botocore is first imported.
os.environ.setdefault("BOTO_DISABLE_CRT", "true")
